"""vqexplore's apps: the Streamlit dashboard (``streamlit run app/dashboard.py``) and the Gradio demo
(``python app/gradio_app.py``). A package: its modules import each other as ``app.<module>``."""
