"""`nox -s bench`: armgate measured against baselines. Outside the gate's import path on purpose."""
