"""The typed objects the API answers with (re-exported by `icodrip_client.types`)."""
