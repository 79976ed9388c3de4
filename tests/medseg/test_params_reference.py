"""The params reference (docs/reference/params.md) and the comments of params.yaml are generated from the
typed sections: a key added, removed or re-described without regenerating them fails here."""
import re

import yaml

from medseg.params_reference import REFERENCE, all_sections, commented, reference
from tests.conftest import REPO


def test_reference_and_params_comments_match_the_sections():
    assert (REPO / REFERENCE).read_text() == reference(), "run: python -m medseg.params_reference --write"
    text = (REPO / "params.yaml").read_text()
    assert text == commented(text), "run: python -m medseg.params_reference --write"


def test_every_key_is_documented_once_with_a_rule_and_a_help():
    table_rows = re.findall(r"^\| `([\w.]+)` \| (.+?) \| (.+?) \|$", reference(), re.M)
    documented = [key for key, _, _ in table_rows]
    expected = [f"{name}.{key}" for name, section in all_sections().items() for key in section.schema()]
    assert documented == expected and len(set(documented)) == len(documented)
    assert all(rule.strip() and help_.strip() for _, rule, help_ in table_rows)


def test_comments_do_not_change_the_values_and_a_drifted_comment_is_rewritten():
    text = (REPO / "params.yaml").read_text()
    assert yaml.safe_load(commented(text)) == yaml.safe_load(text)
    drifted = text.replace("# probability of a horizontal flip", "# flips, sometimes", 1)
    assert drifted != text and commented(drifted) == text
