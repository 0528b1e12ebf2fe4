"""The README's table of daemon options is the one the code declares."""

from __future__ import annotations

from pathlib import Path

from drop_explainer.settings import options_markdown


def test_readme_lists_every_option_with_its_variable_and_default(repo_root: Path) -> None:
    """Regenerate with settings.options_markdown() when an option changes."""
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- options:begin -->\n", 1)[1].split("\n<!-- options:end -->", 1)[0]
    assert table == options_markdown()
