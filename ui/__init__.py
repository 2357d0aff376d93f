"""Streamlit-side helpers of the dashboard (pages reach core through ui.cache).

Importing this package first leaves Streamlit's old "pages directory" mode. Streamlit starts in that mode
because ``pages/`` exists; a visitor who opens a page's own URL first (a shared link to a freshly started app)
then gets that page file run alone, under raw file names in the sidebar, until something calls
``st.navigation``. Every page imports ``ui`` before anything heavy (PyTorch), so the rerun through the router
(dashboard.py, which finds the page from the URL) happens at once instead of after the page's imports.
"""


def _leave_pages_directory_mode() -> None:
    try:
        import streamlit as st
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # a Streamlit without the old mode
        return
    if getattr(PagesManager, "uses_pages_directory", False) and get_script_run_ctx() is not None:
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_pages_directory_mode()
