"""Data — placeholder until issue #3 lands."""

import streamlit as st

st.title("Data")
st.info("Coming next (issue #3): Built-in offline datasets (digits, textures, faces, shapes), uploads of class/image folders with safe decoding, a decoded-tensor cache, sample grids, class balance and a feature-space map.")
