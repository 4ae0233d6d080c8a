"""The objects the API answers with, as typed structs: what /schema/openapi.json describes."""
