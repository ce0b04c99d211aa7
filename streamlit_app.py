"""The app's entrypoint: the pages in the sidebar, under the names people know them by.

Streamlit would name the first page after this file ("streamlit app");
declaring the pages here names it Home and keeps each page's address
(``/Explore``, ``/Search``, …) as links and tests use them.  The pages live
in ``app_pages/``, not ``pages/``: beside a ``pages/`` folder Streamlit
falls back to its older navigation when a session starts on a deep link,
and the sidebar says "streamlit app" again.
"""

import streamlit as st

PAGES = [
    st.Page("app_pages/0_Home.py", title="Home", icon="🎧", default=True),
    st.Page("app_pages/1_Extract.py", title="Extract", icon="📥", url_path="Extract"),
    st.Page("app_pages/2_Explore.py", title="Explore", icon="🗺️", url_path="Explore"),
    st.Page("app_pages/3_Compare.py", title="Compare", icon="⚖️", url_path="Compare"),
    st.Page("app_pages/4_Search.py", title="Search", icon="🔎", url_path="Search"),
]

st.navigation(PAGES).run()
