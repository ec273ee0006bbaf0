"""The engine: everything that can run and be tested without a browser. Never imports streamlit."""
