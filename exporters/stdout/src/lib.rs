//! The stdout exporter: events printed in Zilla's line format
