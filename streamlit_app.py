"""The app's entrypoint: the pages in the sidebar, under the names people know them by.

Streamlit would name the first page after this file ("streamlit app");
declaring the pages here names it Home and keeps each page's address
(``/Explore``, ``/Search``, …) as links and tests use them.  The pages stay
in ``pages/``, the project's fixed layout; beside that folder Streamlit opens a
session that starts on a deep link with the folder's own names, so only a
visit through the front page is sure to say Home.
"""

import streamlit as st

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon="🎧", default=True),
    st.Page("pages/1_Extract.py", title="Extract", icon="📥", url_path="Extract"),
    st.Page("pages/2_Explore.py", title="Explore", icon="🗺️", url_path="Explore"),
    st.Page("pages/3_Compare.py", title="Compare", icon="⚖️", url_path="Compare"),
    st.Page("pages/4_Search.py", title="Search", icon="🔎", url_path="Search"),
]

st.navigation(PAGES).run()
