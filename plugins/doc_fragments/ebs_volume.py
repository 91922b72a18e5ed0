# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

# The suboptions of an EBS volume that module_utils/_params.py's ebs_volume_options() describes, indented for
# the suboptions of an option.
_EBS_VOLUME = r"""
      volume_type:
        description: EBS volume type.
        type: str
        choices: [gp2, gp3, io1, io2, st1, sc1, standard]
      iops:
        description: Provisioned IOPS (gp3, io1, io2).
        type: int
      throughput:
        description: Throughput in MiB/s (gp3 only).
        type: int
      encrypted:
        description: Encrypt the volume.
        type: bool
"""


# The root_volume option of burst_instance, without the suboptions above.
_ROOT_VOLUME = r"""
options:
  root_volume:
    description:
      - Options of the root volume. The image's root device and snapshot are kept.
    type: dict
    suboptions:
      size:
        description: Size in GiB, at least the size of the image's snapshot.
        type: int
      kms_key_id:
        description: KMS key for the encryption; implies O(root_volume.encrypted=true).
        type: str
      initialization_rate:
        description:
          - Provisioned volume initialization rate, 100 to 300 MiB/s (RunInstances' C(VolumeInitializationRate)).
          - The snapshot's blocks are then fetched at that rate instead of lazily on first read, so that the first
            model load is not slowed down. Billed by AWS.
        type: int
      delete_on_termination:
        description: Delete the volume with the instance.
        type: bool
        default: true"""

# The block_devices option of golden_ami, without the suboptions above.
_BLOCK_DEVICES = r"""
options:
  block_devices:
    description:
      - Overrides of the block device mappings of the image.
    type: list
    elements: dict
    default: []
    suboptions:
      device_name:
        description: Device name, for example C(/dev/sda1).
        type: str
        required: true
      volume_size:
        description: Size in GiB.
        type: int
      kms_key_id:
        description: KMS key for the encryption; needs O(block_devices[].encrypted=true).
        type: str
      delete_on_termination:
        description: Delete the volume when the instance terminates.
        type: bool
      snapshot_id:
        description: Snapshot to create the volume from.
        type: str
      no_device:
        description: Leave this device out of the image.
        type: bool
        default: false"""


class ModuleDocFragment:
    # The fragment has no DOCUMENTATION: a module names the option it documents.
    def __init__(self):
        # burst.golden_ami.ebs_volume.root_volume (burst_instance)
        self.ROOT_VOLUME = _ROOT_VOLUME + _EBS_VOLUME
        # burst.golden_ami.ebs_volume.block_devices (golden_ami)
        self.BLOCK_DEVICES = _BLOCK_DEVICES + _EBS_VOLUME
