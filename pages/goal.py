import streamlit as st

st.title("goal")
st.info("This step is being built.")
