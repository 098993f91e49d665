"""A webhook URL is taken apart once into where to connect and the request's fixed lines."""

import pytest

from leanon_notification.webhooks import InvalidUrl, target_of


def test_origin_host_header_and_path() -> None:
    t = target_of("https://Hooks.Example.org:8443/in/a b?x=1&y=ü")
    assert (t.origin.tls, t.origin.host, t.origin.port) == (True, "hooks.example.org", 8443)
    assert t.head.startswith(b"POST /in/a%20b?x=1&y=%C3%BC HTTP/1.1\r\n")
    assert b"\r\nHost: hooks.example.org:8443\r\n" in t.head
    plain = target_of("http://hooks.example.org")
    assert plain.origin.port == 80
    assert plain.head.startswith(b"POST / HTTP/1.1\r\nHost: hooks.example.org\r\n")
    v6 = target_of("http://[2001:db8::1]:8080/x")
    assert v6.origin.host == "2001:db8::1" and b"Host: [2001:db8::1]:8080\r\n" in v6.head


def test_credentials_in_the_url_become_basic_auth() -> None:
    assert (
        b"Authorization: Basic dXNlcjpwIHc=\r\n"
        in target_of("http://user:p%20w@h.example.org/").head
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h.example.org/x",
        "http:///nohost",
        "http://h.example.org:99999/",
        "http://2130706433/",
        "http://0x7f000001:80/",
        "http://h.example.123/",
        "not a url",
    ],
)
def test_what_no_post_can_go_to(url: str) -> None:
    with pytest.raises(InvalidUrl):
        target_of(url)
