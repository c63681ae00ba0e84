"""Ingestion: map, validate, quarantine and de-identify input rows into the store."""

from shoplens.ingest.pipeline import IngestResult, ingest, quarantine_report

__all__ = ["IngestResult", "ingest", "quarantine_report"]
