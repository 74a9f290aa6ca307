"""The cloud-config stage runner (yip-compatible) and its plugins.

Entry points: kairos.stages.runner.run_stage / plan_stage. Keep this package light to
import: early boot runs it, so plugins load lazily (kairos.stages.plugins).
"""
