"""The app's entrypoint: the pages in the sidebar, under the names people know them by.

Streamlit would name the first page after this file ("streamlit app");
declaring the pages (:data:`ui.PAGES`) names it Home and keeps each page's
address (``/Explore``, ``/Search``, …) as links and tests use them.  The pages
stay in ``pages/``, the project's fixed layout; :func:`ui.page` brings a
session that opens on a deep link under these names too.
"""

import ui

ui.navigation().run()
