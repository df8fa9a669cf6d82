"""The dashboard's pages, one module each with a ``render()`` function (listed in ``app.pages``)."""
