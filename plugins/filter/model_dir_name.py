# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: model_dir_name
short_description: The directory of a model under the models root
version_added: 0.1.0
author:
  - burst.golden_ami maintainers (@burst)
description:
  - Names the directory that M(burst.golden_ami.model_download) installs a model in, under its root
    (C(/models)), with the same rule as the module.
  - The model's C(name) when it has one. Otherwise, for a Hugging Face Hub repository (C(source=hub), the
    default), C(org/name) becomes C(org--name); for an S3 prefix (C(source=s3)), the last part of the prefix.
    A URL model (C(source=url)) has no default name.
  - An empty string when the entry gives no name (a URL model without C(name), an S3 model with an empty
    prefix, a C(repo_id) not of the form C(org/name)) or is not a mapping, so that a role can assert on it.
options:
  _input:
    description: A model as C(model_cache_models) lists it (C(source), C(name), C(repo_id), C(prefix)...).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Show where the model lands
  ansible.builtin.debug:
    msg: "{{ '/models/' ~ ({'repo_id': 'Qwen/Qwen2.5-7B-Instruct'} | burst.golden_ami.model_dir_name) }}"
    # /models/Qwen--Qwen2.5-7B-Instruct

- name: Name the model copied to S3
  ansible.builtin.debug:
    msg: "{{ {'source': 's3', 'bucket': 'weights', 'prefix': 'models/e5-small/'} | burst.golden_ami.model_dir_name }}"
    # e5-small
"""

RETURN = r"""
_value:
  description: The directory name (no slash), or an empty string when the entry gives none.
  type: str
"""

from collections.abc import Mapping  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import (  # noqa: E402
    ModelCacheError,
    model_dir_name,
)


def model_dir_name_filter(model):
    """The directory name of ``model``, or an empty string when it gives none."""
    if not isinstance(model, Mapping):
        return ""
    try:
        return model_dir_name(model)
    except ModelCacheError:
        return ""


class FilterModule:
    """The model directory rule of model_download, for the roles."""

    def filters(self):
        return {"model_dir_name": model_dir_name_filter}
