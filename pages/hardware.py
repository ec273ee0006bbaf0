import streamlit as st

st.title("hardware")
st.info("This step is being built.")
