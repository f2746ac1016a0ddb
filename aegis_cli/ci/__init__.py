"""What aegis gives CI: policy test files (``aegis test``), JUnit XML, SARIF and the pytest plugin."""
