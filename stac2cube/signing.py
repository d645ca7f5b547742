"""Signing asset hrefs at read time (Planetary Computer SAS tokens).

Planetary Computer assets live in Azure Blob Storage (``https://<account>.blob.core.windows.net``)
and are read through short-lived SAS tokens appended to the href. stac2cube signs each href when
the reader *opens* it (see :class:`SigningReader`), not when the items are searched, so a long
run never reads with a token that expired while earlier batches were written; the
``planetary-computer`` package caches tokens and renews them a minute before they expire.

The subscription key (needed for collections marked ``msft:requires_account``, such as
``sentinel-1-rtc``) comes from, in order: the ``key`` given to :class:`PlanetaryComputerSigner`
(e.g. read from a Prefect ``Secret`` block), ``PC_SDK_SUBSCRIPTION_KEY``, or the
planetary-computer settings file ``~/.planetarycomputer/settings.env``. It is never logged,
never part of a ``repr``, never written to the cube; signed URLs in error messages are redacted.

The signer is an injectable seam: any ``Callable[[str], str]`` works (tests pass their own).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from stackstac.rio_reader import AutoParallelRioReader

Signer = Callable[[str], str]

BLOB_STORAGE_DOMAIN = ".blob.core.windows.net"
KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"
_SAS_QUERY = re.compile(r"\?(?=[^\s'\"]*\b(?:sig|se|st|sp|sv)=)[^\s'\"]*")


def subscription_key(
    explicit: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """The Planetary Computer subscription key, or None when none is configured.

    Args:
        explicit: a key given by the caller (wins).
        environ: environment to read ``PC_SDK_SUBSCRIPTION_KEY`` from; with the default
            (``os.environ``) the planetary-computer settings (file or
            ``planetary_computer.set_subscription_key``) are consulted too.
    """
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV):
        return env[KEY_ENV]
    if environ is None:
        try:
            from planetary_computer.settings import Settings

            return Settings.get().subscription_key or None
        except Exception:  # pragma: no cover - a broken settings file must not break a build
            return None
    return None


def needs_signing(href: str) -> bool:
    """True for hrefs in Azure Blob Storage (what Planetary Computer serves)."""
    return urlparse(href).netloc.endswith(BLOB_STORAGE_DOMAIN)


def redact_url(url: str | None) -> str | None:
    """``url`` without user name, password, query or fragment (which may carry keys).

    >>> redact_url("https://user:key@example.com/stac?token=abc")
    'https://example.com/stac'
    """
    if not url:
        return url
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact(text: str) -> str:
    """``text`` with SAS query strings removed from every URL in it.

    >>> redact("Error opening 'https://a.blob.core.windows.net/c/x.tif?st=1&se=2&sig=abc'")
    "Error opening 'https://a.blob.core.windows.net/c/x.tif?<sas-token>'"
    """
    return _SAS_QUERY.sub("?<sas-token>", text)


_plain_record_factory: Callable[..., logging.LogRecord] | None = None


def _redacting_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _plain_record_factory is not None
    record = _plain_record_factory(*args, **kwargs)
    message = record.getMessage()
    if "sig=" in message:
        record.msg, record.args = redact(message), None
    return record


def redact_logs() -> None:
    """Redact SAS tokens from every log record of this process, from here on.

    GDAL's messages about a signed href (logged by rasterio at DEBUG, from reader threads)
    carry the whole signed URL; no logger of ours writes them, so the records are redacted as
    they are made. Idempotent; called where a signed href is first opened.
    """
    global _plain_record_factory
    if _plain_record_factory is None:
        _plain_record_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_record_factory)


class PlanetaryComputerSigner:
    """Sign hrefs with ``planetary_computer.sign`` (a picklable callable for Dask workers).

    Args:
        key: subscription key; None uses ``PC_SDK_SUBSCRIPTION_KEY`` / the settings file of the
            process that signs (a worker inherits the environment of the process that started
            it). The key travels with the signer to the workers but is never shown by ``repr``.
    """

    def __init__(self, key: str | None = None) -> None:
        self._key = key

    @property
    def has_key(self) -> bool:
        return bool(subscription_key(self._key))

    def __call__(self, href: str) -> str:
        if not needs_signing(href):
            return href
        import planetary_computer
        from planetary_computer.settings import Settings

        key = subscription_key(self._key)
        if key and Settings.get().subscription_key != key:
            Settings.get().subscription_key = key
        return planetary_computer.sign(href)

    def __repr__(self) -> str:
        return f"PlanetaryComputerSigner(key={'<set>' if self._key else '<from environment>'})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlanetaryComputerSigner) and other._key == self._key

    def __hash__(self) -> int:
        return hash(PlanetaryComputerSigner)


def make_signer(
    catalog: Any, items: Iterable[Mapping[str, Any]] = (), *, key: str | None = None
) -> Signer | None:
    """The signer for reading ``items`` of ``catalog``, or None when nothing needs signing.

    Planetary Computer (``catalog.sign_urls``) always gets a :class:`PlanetaryComputerSigner`;
    any other catalog gets one only when some asset href is in Azure Blob Storage (Planetary
    Computer items re-served by another API).
    """
    if getattr(catalog, "sign_urls", False):
        return PlanetaryComputerSigner(key)
    for item in items:
        for asset in item.get("assets", {}).values():
            if needs_signing(str(asset.get("href", ""))):
                return PlanetaryComputerSigner(key)
    return None


class SigningReader(AutoParallelRioReader):
    """stackstac's reader, signing the href right before the asset is opened.

    ``url`` stays the unsigned href (it is what errors name, with any token redacted); the
    signed one is used only to open the dataset. Pass it to ``stackstac.stack`` as
    ``reader=reader_with_signer(signer)``.
    """

    def __init__(self, *, signer: Signer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.signer = signer

    def _open(self):
        redact_logs()
        # The errors are raised outside the ``except`` blocks: ``from None`` only hides the
        # original (unredacted) exception from tracebacks, it stays the ``__context__``, which
        # Dask pickles (tblib) with the error and logs when it cannot unpickle it.
        unsigned = self.url
        try:
            signed = self.signer(unsigned)
        except Exception as exc:
            message = (
                f"Error opening {unsigned!r}: cannot sign the href: "
                f"{redact(type(exc).__name__ + ': ' + str(exc))[:300]}"
            )
        else:
            self.url = signed
            try:
                return super()._open()
            except Exception as exc:
                message = redact(str(exc))
            finally:
                self.url = unsigned
        raise RuntimeError(message)

    def __getstate__(self):
        return {**super().__getstate__(), "signer": self.signer}

    def __setstate__(self, state):
        state = dict(state)
        signer = state.pop("signer")
        self.__init__(signer=signer, **state)


def reader_with_signer(signer: Signer) -> Callable[..., SigningReader]:
    """A reader factory for ``stackstac.stack(reader=...)`` that signs with ``signer``."""
    return functools.partial(SigningReader, signer=signer)
