"""Pipeline stages, one module a stage: pure functions plus a thin Prefect ``@task`` each.

``search`` -> ``group`` -> ``load`` -> ``preprocess`` -> ``write``.
"""
