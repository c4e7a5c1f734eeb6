"""The published AccountDB contract: a valid OpenAPI file that matches the schema defaults and the server."""

import os

import pytest
import yaml

from pve_hooks.config import schema
from pve_hooks_devserver import contract, faults

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'docs')


@pytest.fixture(scope='module')
def spec():
    with open(os.path.join(DOCS, 'accountdb-openapi.yaml'), encoding='utf-8') as stream:
        return yaml.safe_load(stream)


@pytest.fixture(scope='module')
def guide():
    with open(os.path.join(DOCS, 'accountdb-api.md'), encoding='utf-8') as stream:
        return stream.read()


def test_openapi_file_is_valid(spec):
    import openapi_spec_validator

    validate = getattr(openapi_spec_validator, 'validate', None) or openapi_spec_validator.validate_spec
    validate(spec)


def test_openapi_file_has_a_broken_copy_rejected(spec):
    # Proves the validator really checks: a response without a description is invalid OpenAPI.
    import copy

    import openapi_spec_validator

    validate = getattr(openapi_spec_validator, 'validate', None) or openapi_spec_validator.validate_spec
    broken = copy.deepcopy(spec)
    del broken['paths']['/api/v1/health']['get']['responses']['200']['description']
    with pytest.raises(Exception):
        validate(broken)


def test_every_default_endpoint_path_is_documented_with_the_server_methods(spec, guide):
    endpoints = [option for option in schema.OPTIONS if option.key.startswith('accountdb.endpoints.')]
    assert endpoints
    for option in endpoints:
        name = option.key.rsplit('.', 1)[1]
        assert option.default in spec['paths'], option.key
        methods = {method.upper() for method in spec['paths'][option.default]}
        assert methods == set(contract.METHODS[name]), option.key
        assert option.default in guide, option.key
    assert set(spec['paths']) == {option.default for option in endpoints}


def test_every_fault_mode_is_documented(guide):
    for mode in faults.MODES:
        assert '`{0}`'.format(mode) in guide, mode


def test_every_error_status_of_the_contract_is_classified_in_the_guide(guide):
    for status in ('408', '409', '412', '413', '422', '425', '429', '401', '403', '404', '405', '400'):
        assert status in guide, status
