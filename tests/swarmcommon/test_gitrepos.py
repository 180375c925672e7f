"""Repository parsing and matching, without I/O: what each accepted shape
parses to, and where a prefix stops covering."""

from __future__ import annotations

import pytest

from swarmcommon.gitrepos import Prefix, Repository, is_under, local_segments, parse


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("https://GitHub.com/acme/app.git", Repository("https", "github.com", "", ("acme", "app.git"))),
        ("https://github.com/acme/app/", Repository("https", "github.com", "", ("acme", "app"))),
        ("ssh://git@host:2222/acme/app.git", Repository("ssh", "host", "2222", ("acme", "app.git"))),
        ("git@github.com:acme/app.git", Repository("ssh", "github.com", "", ("acme", "app.git"))),
        ("host:/srv/app.git", Repository("ssh", "host", "", ("srv", "app.git"))),
        ("/srv/git/acme/app.git", Repository("file", "", "", ("srv", "git", "acme", "app.git"))),
        ("file:///srv/git/acme/app.git", Repository("file", "", "", ("srv", "git", "acme", "app.git"))),
    ],
)
def test_each_accepted_shape_parses(value: str, parsed: Repository) -> None:
    assert parse(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "ext::sh -c id",
        "fd::3",
        "http://host/x.git",
        "git://host/x.git",
        "ftp://host/x.git",
        "file://otherhost/srv/x.git",
        "https://user:secret@host/x.git",
        "https://host/a/../b",
        "https://host/a/./b",
        "https://host//a",
        "https://host/%2e%2e/b",
        "https://host/a?x=1",
        "https://host/a#frag",
        "https://host",
        "https://[::1]/x.git",
        "https://host:99999/x",
        "https://ho_st/x",
        "/srv/../etc",
        "relative/path",
        "-u/x",
        "host:a\nb",
        "host:a\\b",
        "",
    ],
)
def test_everything_else_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse(value)


def test_a_prefix_covers_whole_segments_on_its_host_and_port() -> None:
    acme = Prefix.parse("github.com/acme/")
    assert str(acme) == "github.com/acme/"
    for covered in (
        "https://github.com/acme/x.git",
        "git@github.com:acme/x.git",
        "ssh://github.com/acme/a/b",
    ):
        assert acme.covers(parse(covered)), covered
    for other in (
        "https://github.com/acme-evil/x.git",
        "https://github.com/beta/x.git",
        "https://github.com.evil.test/acme/x.git",
        "https://github.com:8443/acme/x.git",
        "/github.com/acme/x.git",
    ):
        assert not acme.covers(parse(other)), other
    assert Prefix.parse("git.internal:2222").covers(parse("ssh://git.internal:2222/any/x.git"))
    for bad in ("https://github.com/acme/", "git@github.com:acme", "github.com/../x", "ho st/"):
        with pytest.raises(ValueError):
            Prefix.parse(bad)


def test_a_local_repository_is_under_a_directory_only_strictly_inside_it() -> None:
    tenant = (*local_segments("/srv/git/"), "acme")
    assert is_under(parse("/srv/git/acme/x.git"), tenant)
    assert is_under(parse("file:///srv/git/acme/team/x.git"), tenant)
    assert not is_under(parse("/srv/git/acme"), tenant)
    assert not is_under(parse("/srv/git/acme-evil/x.git"), tenant)
    assert not is_under(parse("https://srv/git/acme/x.git"), tenant)
    with pytest.raises(ValueError):
        local_segments("srv/git")
