"""check_redirect: a redirect is followed only within the origin (scheme, host, port).

The servers' side (nothing reaches the other origin) is in
tests/integration/test_redirects.py.
"""

from __future__ import annotations

import pytest

from kpiwatch.sources.web import RedirectRefused, check_redirect


@pytest.mark.parametrize(
    ("location", "refused"),
    [
        ("/elsewhere?x=1", None),
        ("other", None),
        ("HTTP://Example.com:80/x", None),  # the default port, spelled out
        ("https://example.com/x", "https://example.com"),  # scheme
        ("http://example.com:8080/x", "http://example.com:8080"),  # port
        ("//evil.example/x?key=1", "http://evil.example"),  # host, scheme-relative
        ("http://user:pw@evil.example/x", "http://evil.example"),  # credentials not shown
    ],
)
def test_the_origin_is_scheme_host_and_port(location: str, refused: str | None) -> None:
    if refused is None:
        check_redirect("http://example.com/api/v1", location)
        return
    with pytest.raises(RedirectRefused) as caught:
        check_redirect("http://example.com/api/v1", location)
    assert str(caught.value).startswith(f"redirected to {refused}, another origin")
