import streamlit as st

st.title("data")
st.info("This step is being built.")
