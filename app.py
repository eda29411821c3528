"""Transferability Explorer — router and shared sidebar (no torch code here).

Pages live in app_pages/, not pages/: Streamlit treats a pages/ folder beside the entry
script as a legacy multipage app, and a fresh server would then serve /data without this
router (no sidebar, wrong menu). The default page (the zoo) is served at "/".
"""

import streamlit as st

st.set_page_config(page_title="Transferability Explorer", page_icon=":material/transfer_within_a_station:", layout="wide")
# The first visit after the server starts imports PyTorch and torchvision (~7 s on 2 cores): a
# line saying so instead of a blank page. Later runs find them imported (a spinner waits 0.5 s).
with st.spinner("Starting PyTorch: the first visit after the server starts waits a few seconds…"):
    from ui import data_view, demo, sidebar

demo.configure()

PAGES = [
    st.Page("app_pages/zoo.py", title="Model zoo", icon=":material/view_list:", default=True),
    st.Page("app_pages/data.py", title="Data", icon=":material/photo_library:", url_path="data"),
    st.Page("app_pages/recommend.py", title="Strategy", icon=":material/explore:", url_path="strategy"),
    st.Page("app_pages/finetune.py", title="Fine-tune lab", icon=":material/tune:", url_path="finetune"),
    st.Page("app_pages/visualize.py", title="Inside the network", icon=":material/visibility:", url_path="visualize"),
]

page = st.navigation(PAGES)
data_view.remember_in_url()  # a refresh of any page keeps the dataset
show_cache_usage = sidebar.render()
demo.banner()
demo.mark_visit()
demo.keep_visitor()  # a refresh is the same visitor: it keeps its runs
page.run()
show_cache_usage()  # what the page decoded or rendered counts at once (a page that called st.stop keeps the first)
