import streamlit as st

st.title("estimate")
st.info("This step is being built.")
