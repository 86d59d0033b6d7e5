"""Site configuration: the schema (defaults and ranges from the manuals), loading and validation."""
from ems.config.schema import SiteConfig
from ems.config.load import ConfigError, Problem, load_site, site_from_dict

__all__ = ["SiteConfig", "ConfigError", "Problem", "load_site", "site_from_dict"]
