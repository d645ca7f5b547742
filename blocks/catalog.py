"""The STAC catalog block: which STAC API to search, and the key it needs (kept secret)."""

from __future__ import annotations

from typing import ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from stac2cube.catalogs import CATALOGS, CatalogSpec, resolve_catalog

_LOGO = (
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/webhook.png"
)
_DOCS = "https://github.com/radiantearth/stac-api-spec"


class StacCatalog(Block):
    """A STAC API to build cubes from: a known catalog or any STAC API URL, with its key.

    The key (a Planetary Computer subscription key, or a token for a private API) is a
    ``SecretStr``: Prefect stores it encrypted, and it shows as ``**********`` in the UI, in
    ``repr``, in logs and in ``model_dump()``. Only :meth:`secret_key` and
    :meth:`request_headers` reveal it.

    Attributes:
        kind: earth-search, planetary-computer, terrabyte, or custom.
        url: Root URL of the STAC API; filled in for the known catalogs.
        api_key: Key sent with every request, or None for open catalogs.
    """

    _block_type_name: ClassVar[str] = "STAC Catalog"
    _block_type_slug: ClassVar[str] = "stac-catalog"
    _logo_url: ClassVar[str] = _LOGO
    _documentation_url: ClassVar[str] = _DOCS
    _description: ClassVar[str] = (
        "A STAC API that stac2cube builds cubes from (Earth Search, Planetary Computer, "
        "terrabyte or any STAC API URL), with an optional secret API key."
    )
    _code_example: ClassVar[str] = """\
        from stac2cube.blocks import StacCatalog
        from stac2cube import get_stac_layers

        catalog = StacCatalog.load("BLOCK_NAME")
        get_stac_layers(catalog=catalog.catalog_arg(), ...)
        """

    kind: Literal["earth-search", "planetary-computer", "terrabyte", "custom"] = Field(
        default="earth-search",
        description="Which catalog: a known one, or custom for any STAC API URL.",
    )
    url: str | None = Field(
        default=None,
        description="Root URL of the STAC API; leave empty for the known catalogs.",
        examples=["https://earth-search.aws.element84.com/v1"],
    )
    api_key: SecretStr | None = Field(
        default=None,
        title="API key",
        description=(
            "Key sent with every request (Planetary Computer: the subscription key); "
            "empty for open catalogs."
        ),
    )

    @model_validator(mode="after")
    def _fill_url(self) -> StacCatalog:
        if self.kind == "custom":
            if not self.url:
                raise ValueError("a custom STAC catalog needs its url")
            resolve_catalog(self.url)  # raises on anything but an http(s) URL
        elif not self.url:
            self.url = CATALOGS[self.kind].url
        return self

    def spec(self) -> CatalogSpec:
        """The catalog as :class:`~stac2cube.catalogs.CatalogSpec` (collections per mission)."""
        if self.kind != "custom" and self.url.rstrip("/") == CATALOGS[self.kind].url:
            return CATALOGS[self.kind]
        return resolve_catalog(self.url)

    def catalog_arg(self) -> str:
        """The value for the ``catalog`` parameter of the flows and ``--catalog``."""
        spec = self.spec()
        return spec.name if spec.name != "custom" else spec.url

    def secret_key(self) -> str | None:
        """The key in clear text, for the signer or the HTTP headers only; None without one.

        For Planetary Computer it is the subscription key that
        :func:`stac2cube.signing.subscription_key` accepts as ``explicit``.
        """
        return None if self.api_key is None else self.api_key.get_secret_value()

    def request_headers(self) -> dict[str, str]:
        """HTTP headers carrying the key (revealed here only), or ``{}`` without one."""
        key = self.secret_key()
        if key is None:
            return {}
        if self.kind == "planetary-computer":
            return {"Ocp-Apim-Subscription-Key": key}
        return {"Authorization": f"Bearer {key}"}
