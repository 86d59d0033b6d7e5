"""Site configuration: the schema (defaults and ranges from the manuals), loading and validation."""
from ems.config.schema import CONFIG_VERSION, SiteConfig
from ems.config.load import ConfigError, Problem, load_site, site_from_dict

__all__ = ["CONFIG_VERSION", "SiteConfig", "ConfigError", "Problem", "load_site", "site_from_dict"]
