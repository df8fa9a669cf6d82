"""Session-state keys the dashboard's modules share (the sidebar, the page frame, the view state in
the link, and pages that hand a choice to another page). A key one page alone uses for its own
widget stays beside that widget."""

SELECTED_SOURCES = "selected_sources"  # sidebar labels of the checkpoints every page shows
EXTRA_SOURCES = "extra_sources"        # label -> path or Hub id added in the sidebar
NEW_SOURCE = "new_source"              # the sidebar's "add a checkpoint" text field
ADD_ERROR = "add_error"                # why the last added source was refused
SAMPLE_SIZE = "sample_size"            # number of validation images
IMAGE_SIZE = "image_size"              # side of the validation crops in pixels
FOCUS = "focus"                        # the checkpoint the single-checkpoint pages show
INSPECT_CODE = "inspect_code"          # the code the Code inspector opens on (set by other pages too)
PAGE_STARTED = "_page_started"         # perf_counter() when this run's page began


def widget(key: str) -> str:
    """The widget key that mirrors the plain session key ``key`` (see ``app.sidebar``)."""
    return f"w_{key}"
