"""nextbest: next-best-action service for pharmaceutical omnichannel engagement."""

# A development version between releases: models trained now are tagged with it, not
# with the release before (CHANGELOG.md, "Unreleased").
__version__ = "0.3.0.dev0"
