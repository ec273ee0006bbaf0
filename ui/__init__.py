"""Streamlit widgets shared by several pages (the page layer; the engine never imports this)."""
