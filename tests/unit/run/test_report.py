"""The HTML report's token highlighting."""

import pandas as pd
from influence.run.report import highlight


def test_highlight_escapes_text_and_colours_by_sign():
    html = highlight(pd.DataFrame({"token": ["<b>", " ok"], "influence": [2.0, -1.0]}))
    assert "&lt;b&gt;" in html and "rgba(214,39,40,1.00)" in html and "rgba(31,119,180,0.50)" in html
