"""How large a spec may be: limits that both the loader and the schema hold it to.

Kept apart from both so that the schema need not import the loader to state them.
"""

# A spec is a page or two of YAML; anything that expands far past this is an alias bomb.
MAX_NODES = 20_000
MAX_DEPTH = 64
MAX_SPEC_BYTES = 1_000_000
# Each profile a spec defines is validated on its own: thousands would take minutes.
MAX_PROFILES = 64
MAX_STAGES = 16
