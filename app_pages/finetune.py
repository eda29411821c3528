"""Fine-tune lab — placeholder until issue #4 lands."""

import streamlit as st

st.title("Fine-tune lab")
st.info("Coming next (issue #4): Freeze the first N blocks of a model's real block list, train in the background in seconds, keep every run, sweep all freeze depths.")
