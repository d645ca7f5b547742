"""The SuperresModel block: Prefect's standard block checks, and the settings a flow takes
from a saved block (against the session's real Prefect API)."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import ValidationError
from test_blocks import _downloadable, _prefect_logo_urls

from stac2cube.blocks import SuperresModel
from stac2cube.cube import Cube
from stac2cube.errors import InvalidRequestError
from stac2cube.flows.superres import superres_settings


class TestSuperresModelStandardSuite(BlockStandardTestSuite):
    @pytest.fixture()
    def block(self) -> type[Block]:
        return SuperresModel

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        if _downloadable(str(block._logo_url)):
            super().test_has_a_valid_image(block)
        else:
            assert str(block._logo_url) in _prefect_logo_urls()


def test_block_settings_reach_the_flow(tmp_path):
    SuperresModel(model_dir=str(tmp_path / "w"), model="full", device="cpu", batch_size=2).save(
        "sr-test-block", overwrite=True
    )
    cube = Cube(tmp_path / "none.icechunk")
    s = superres_settings(cube, model_block="sr-test-block")
    assert (s.model_dir, s.model, s.device, s.batch_size) == (
        str(tmp_path / "w"), "full", "cpu", 2,
    )  # fmt: skip
    # arguments win over the block
    assert superres_settings(cube, model_block="sr-test-block", model="rgbn").model == "rgbn"
    with pytest.raises(InvalidRequestError, match="needs --model-dir"):
        superres_settings(cube)
    with pytest.raises(ValidationError):
        SuperresModel(model_dir=" ")
    assert SuperresModel.get_block_type_slug() == "superres-model"
