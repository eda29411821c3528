"""tlcore — the engine of Transferability Explorer (never imports streamlit)."""

__version__ = "0.1.0"
