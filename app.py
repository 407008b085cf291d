"""l2g web app: `streamlit run app.py [-- --gallery-root DIR ...]`.

Pages live in l2g/app/; this file only declares them.
"""
import streamlit as st

from l2g.app import eval_page, gallery_page, howto_page, query_page

st.set_page_config(page_title="l2g: local-to-global retrieval", page_icon=":material/search:", layout="wide")
pages = {
    # the default page is served at / (its url_path gives it no /query address): a tour link is /?tour=KEY
    "query": st.Page(query_page.render, title="Query", icon=":material/search:", url_path="query", default=True),
    "evaluation": st.Page(eval_page.render, title="Evaluation", icon=":material/leaderboard:", url_path="evaluation"),
    "galleries": st.Page(gallery_page.render, title="Galleries", icon=":material/photo_library:", url_path="galleries"),
    "howto": st.Page(howto_page.render, title="How it works", icon=":material/lightbulb:", url_path="how-it-works"),
}
st.session_state["l2g_pages"] = pages
st.navigation(list(pages.values())).run()
