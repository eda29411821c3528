"""Streamlit-only glue: cached resources, widget groups, figure builders."""
