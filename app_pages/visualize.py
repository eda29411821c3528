"""Inside the network — placeholder until a later issue lands."""

import streamlit as st

st.title("Inside the network")
st.info("Coming next (a later issue): Feature visualization (lucent objectives, many channels per batch), a layer gallery with the images that excite each channel, and DeepDream.")
