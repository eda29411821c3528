"""Strategy recommender — placeholder until a later issue lands."""

import streamlit as st

st.title("Strategy recommender")
st.info("Coming next (a later issue): Where your dataset sits on the seeds' size × similarity matrix — similarity measured on your data (LEEP, NCE, LogME, BatchNorm-statistics gap), with a one-click validation of the competing strategies.")
