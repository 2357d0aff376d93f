"""Streamlit glue: the one caching module (``ui.cache``) and the shared sidebar (``ui.sidebar``)."""
