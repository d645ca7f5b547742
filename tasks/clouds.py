"""Cloud-layers stage: thin tasks over :mod:`stac2cube.clouds_store` (plan, then write)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stac2cube.clouds_store import plan_cloud_layers, write_cloud_layers

plan_clouds_task = task(plan_cloud_layers, name="plan-cloud-layers", cache_policy=NO_CACHE)
write_clouds_task = task(write_cloud_layers, name="write-cloud-layers", cache_policy=NO_CACHE)
