"""Configs: the schema with every field and its default (schema), every check before any
work (checks), fields by dotted path (paths), config files (files), and what a population
of configs may vary (population)."""

from jaxkd.config.checks import stage_configs, validate
from jaxkd.config.files import load_config_file
from jaxkd.config.schema import base_config, complete, graph_config, pipeline_config

__all__ = ["base_config", "complete", "graph_config", "load_config_file", "pipeline_config", "stage_configs",
           "validate"]
