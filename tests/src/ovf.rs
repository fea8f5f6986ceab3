// SPDX-License-Identifier: MIT
//! An independent reader of OVF descriptors (roxmltree, by namespace), used
//! to check what ferry-ovf writes.

/// What the descriptor says, read with an XML parser by namespace.
#[derive(Debug)]
pub struct Hardware {
    pub family: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub scsi_controller: String,
    pub disk_capacity_bytes: u64,
    pub disk_parent_is_scsi: bool,
    pub adapter: String,
    pub firmware: String,
    pub transports: Vec<String>,
    pub properties: Vec<String>,
    pub file_size: u64,
    pub product: String,
    pub annotation: String,
}

const OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const VSSD: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";
const VMW: &str = "http://www.vmware.com/schema/ovf";

/// Reads the hardware back from a descriptor; panics naming what is missing.
pub fn read_hardware(xml: &str) -> Hardware {
    let doc = roxmltree::Document::parse(xml).expect("descriptor is well-formed XML");
    let root = doc.root_element();
    assert!(root.has_tag_name((OVF, "Envelope")));
    let find = |ns: &str, name: &str| {
        root.descendants()
            .find(|n| n.has_tag_name((ns, name)))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let child_text = |n: roxmltree::Node, name: &str| -> Option<String> {
        n.children()
            .find(|c| c.has_tag_name((RASD, name)))
            .and_then(|c| c.text())
            .map(str::to_string)
    };
    let items: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name((OVF, "Item")))
        .collect();
    let item = |rtype: &str| {
        *items
            .iter()
            .find(|n| child_text(**n, "ResourceType").as_deref() == Some(rtype))
            .unwrap_or_else(|| panic!("no item of resource type {rtype}"))
    };
    let quantity = |rtype: &str| -> u64 {
        child_text(item(rtype), "VirtualQuantity")
            .unwrap()
            .parse()
            .unwrap()
    };
    let memory = item("4");
    assert_eq!(
        child_text(memory, "AllocationUnits").as_deref(),
        Some("byte * 2^20")
    );
    let scsi = item("6");
    let disk_item = item("17");
    let disk = find(OVF, "Disk");
    let capacity: u64 = disk.attribute((OVF, "capacity")).unwrap().parse().unwrap();
    let units = disk.attribute((OVF, "capacityAllocationUnits")).unwrap();
    let multiplier = match units {
        "byte * 2^30" => 1 << 30,
        "byte" => 1,
        other => panic!("units {other}"),
    };
    let firmware = root
        .descendants()
        .filter(|n| n.has_tag_name((VMW, "Config")))
        .find(|n| n.attribute((VMW, "key")) == Some("firmware"))
        .and_then(|n| n.attribute((VMW, "value")))
        .unwrap()
        .to_string();
    let vhs = find(OVF, "VirtualHardwareSection");
    Hardware {
        family: find(VSSD, "VirtualSystemType").text().unwrap().to_string(),
        cpus: quantity("3"),
        memory_mib: quantity("4"),
        scsi_controller: child_text(scsi, "ResourceSubType").unwrap(),
        disk_capacity_bytes: capacity * multiplier,
        disk_parent_is_scsi: child_text(disk_item, "Parent") == child_text(scsi, "InstanceID"),
        adapter: child_text(item("10"), "ResourceSubType").unwrap(),
        firmware,
        transports: vhs
            .attribute((OVF, "transport"))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        properties: root
            .descendants()
            .filter(|n| n.has_tag_name((OVF, "Property")))
            .map(|n| n.attribute((OVF, "key")).unwrap().to_string())
            .collect(),
        file_size: find(OVF, "File")
            .attribute((OVF, "size"))
            .unwrap()
            .parse()
            .unwrap(),
        product: find(OVF, "Product").text().unwrap().to_string(),
        annotation: find(OVF, "Annotation").text().unwrap().to_string(),
    }
}
