"""The Streamlit app's pages and helpers (``streamlit run app.py``).

Only this package imports Streamlit; settings.py, uploads.py and core.py are
plain Python so that tests can call them directly.
"""
