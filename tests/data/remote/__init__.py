import pytest

# the shared helpers assert too: their failures show the compared values, as a test module's do
pytest.register_assert_rewrite("tests.data.remote.helpers")
