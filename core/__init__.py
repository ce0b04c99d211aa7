"""Audio embedding browser: all logic, importable without Streamlit."""
