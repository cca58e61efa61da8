"""Importing stacfetch, and using its session, changes no process-wide state.

A fresh interpreter snapshots os.environ, the logging record factory and requests-oauthlib /
oauthlib's module attributes, imports every stacfetch module (not the CLI: the process
owner may change such things), opens a session and fetches a token from the emulator, and
compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Modules known to still change process state at import (owned by other helpers of issue 10);
# the coordinator removes an entry once its module is fixed. The test fails for any other.
KNOWN: dict[str, str] = {}

_SET_BY_LIBRARIES = ("GDAL_", "PROJ_", "CPL_", "VSI_", "OAUTHLIB_")
CHILD = textwrap.dedent(
    r"""
    import json, logging, os, pkgutil, sys, importlib

    # third-party libraries first: what they do at import (rasterio sets GDAL_CURL_CA_BUNDLE)
    # is theirs, not stacfetch's
    import numpy, pyproj, pystac_client, rasterio, shapely  # noqa: F401

    import oauthlib.oauth2.rfc6749.utils as oauth_utils
    import requests_oauthlib
    import requests_oauthlib.oauth2_session as oauth_session

    def snapshot():
        return {
            "environ": dict(os.environ),
            "factory": repr(logging.getLogRecordFactory()),
            "requests_oauthlib": {k: repr(v) for k, v in vars(requests_oauthlib).items()},
            "session.is_secure_transport": repr(oauth_session.is_secure_transport),
            "utils.is_secure_transport": repr(oauth_utils.is_secure_transport),
        }

    def changes(before, after):
        out = []
        for key in before:
            if before[key] != after[key]:
                if isinstance(before[key], dict):
                    keys = sorted(k for k in set(before[key]) | set(after[key])
                                  if before[key].get(k) != after[key].get(k))
                    out.append(f"{key}: {keys}")
                else:
                    out.append(f"{key}: {before[key]} -> {after[key]}")
        return out

    skip = ("stacfetch.cli", "stacfetch.__main__", "stacfetch.testing")
    report = {}
    import stacfetch
    names = sorted(m.name for m in pkgutil.walk_packages(stacfetch.__path__, "stacfetch."))
    for name in ["stacfetch", *names]:
        if name.startswith(skip) or name == "stacfetch.testing":
            continue
        before = snapshot()
        importlib.import_module(name)
        found = changes(before, snapshot())
        if found:
            report[name] = found

    from stacfetch.config import Settings
    from stacfetch.http import open_session
    from stacfetch.testing.emulator import Emulator

    with Emulator() as emu:
        before = snapshot()
        settings = Settings(provider="sentinelhub", base_url=emu.url, token_url=emu.token_url,
                            client_id="sandbox", client_secret="sandbox-secret")
        with open_session(settings) as session:
            assert session.get(emu.url + "/api/v1/catalog/1.0.0/").status_code == 200
            assert session.token_source.fetches == 1
        found = changes(before, snapshot())
        if found:
            report["open_session + token"] = found
    print(json.dumps(report))
    """
)


def test_importing_and_using_stacfetch_changes_no_process_state() -> None:
    # the child starts without what this test process (or a library in it) may have set
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SET_BY_LIBRARIES)}
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    unexpected = {name: found for name, found in report.items() if name not in KNOWN}
    assert unexpected == {}, f"process-wide state changed by: {unexpected}"
    fixed = sorted(name for name in KNOWN if name not in report)
    assert fixed == [], f"no longer change process state (remove from KNOWN): {fixed}"
