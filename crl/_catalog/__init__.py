"""The built-in catalogs (envs, agents, experiments) as shipped inside the wheel."""
