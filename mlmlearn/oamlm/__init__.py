"""OAMLM: orientation adaptive MLM for force directions (in progress; see issue 4)."""
