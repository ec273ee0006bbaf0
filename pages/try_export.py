import streamlit as st

st.title("try_export")
st.info("This step is being built.")
