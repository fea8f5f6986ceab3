// SPDX-License-Identifier: MIT
//! The OVF 1.0 descriptor: what vSphere reads to build the VM.

use std::fmt::Write;

/// Virtual hardware the appliance is sized for.
pub const CPUS: u32 = 4;
pub const MEMORY_MIB: u32 = 32768;
/// The oldest virtual hardware family with everything used here (EFI,
/// ParaVirtual SCSI, VMXNET3): ESXi 6.7 and every newer host run it.
pub const HARDWARE_FAMILY: &str = "vmx-14";

/// The OVF properties users fill in at import (all optional). Their keys
/// are what `ovf-env.xml` carries to the guest.
pub const PROPERTIES: &[Property] = &[
    Property {
        key: "ferry.hostname",
        label: "Hostname",
        description: "Host name of the appliance (empty: ferry).",
    },
    Property {
        key: "ferry.ipv4.address",
        label: "IPv4 address/prefix",
        description: "Static address with prefix length, e.g. 192.0.2.10/24. Empty: DHCP.",
    },
    Property {
        key: "ferry.ipv4.gateway",
        label: "IPv4 gateway",
        description: "Default gateway for a static address.",
    },
    Property {
        key: "ferry.dns",
        label: "DNS servers",
        description: "Comma-separated IPv4 addresses of DNS servers.",
    },
    Property {
        key: "ferry.ntp",
        label: "NTP servers",
        description: "Comma-separated NTP server names or addresses.",
    },
    Property {
        key: "ferry.support.public_key",
        label: "Support channel public key",
        description:
            "OpenSSH public key allowed on the support channel (empty: support channel closed).",
    },
];

#[derive(Debug, Clone, Copy)]
pub struct Property {
    pub key: &'static str,
    pub label: &'static str,
    pub description: &'static str,
}

/// What the descriptor says about the product.
#[derive(Debug, Clone)]
pub struct Product {
    pub name: String,
    pub version: String,
    pub vendor: String,
    pub url: String,
    pub annotation: String,
}

impl Default for Product {
    fn default() -> Product {
        Product {
            name: "Ferry".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "The Ferry project".into(),
            url: "https://github.com/ferry-sync/ferry".into(),
            annotation: "Ferry file-sync appliance: copies and verifies files between NFS shares. \
                         Set the network below or leave the address empty for DHCP."
                .into(),
        }
    }
}

/// The disk file the descriptor references.
#[derive(Debug, Clone)]
pub struct DiskFile {
    pub href: String,
    pub file_size: u64,
    pub capacity_bytes: u64,
    pub populated_bytes: u64,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The descriptor text. The disk capacity is given in GiB with
/// `ovf:capacityAllocationUnits="byte * 2^30"` (an exact count of GiB;
/// without the unit vCenter reads it 1024x off).
pub fn render(product: &Product, disk: &DiskFile) -> Result<String, crate::Error> {
    if disk.capacity_bytes % (1 << 30) != 0 {
        return Err(crate::Error::CapacityNotWholeGib(disk.capacity_bytes));
    }
    let capacity_gib = disk.capacity_bytes >> 30;
    let name = esc(&product.name);
    let mut x = String::new();
    let w = &mut x;
    let _ = write!(
        w,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{href}" ovf:id="file1" ovf:size="{file_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity_gib}" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="{populated}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The network the appliance reaches its NFS shares on</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <AnnotationSection ovf:required="false">
      <Info>A human-readable annotation</Info>
      <Annotation>{annotation}</Annotation>
    </AnnotationSection>
    <ProductSection ovf:required="false">
      <Info>Information about the installed software</Info>
      <Product>{name}</Product>
      <Vendor>{vendor}</Vendor>
      <Version>{version}</Version>
      <FullVersion>{version}</FullVersion>
      <ProductUrl>{url}</ProductUrl>
      <VendorUrl>{url}</VendorUrl>
      <Category>First-boot network settings</Category>
"#,
        href = esc(&disk.href),
        file_size = disk.file_size,
        populated = disk.populated_bytes,
        annotation = esc(&product.annotation),
        vendor = esc(&product.vendor),
        version = esc(&product.version),
        url = esc(&product.url),
    );
    for p in PROPERTIES {
        let _ = write!(
            w,
            r#"      <Property ovf:key="{key}" ovf:type="string" ovf:userConfigurable="true" ovf:value="">
        <Label>{label}</Label>
        <Description>{description}</Description>
      </Property>
"#,
            key = p.key,
            label = esc(p.label),
            description = esc(p.description),
        );
    }
    let _ = write!(
        w,
        r#"    </ProductSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="other4xLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo iso">
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>{family}</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{memory}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>VirtualIDEController 0</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:Description>Carries ovf-env.xml for the ISO transport</rasd:Description>
        <rasd:ElementName>CD-ROM 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:Parent>4</rasd:Parent>
        <rasd:ResourceSubType>vmware.cdrom.remotepassthrough</rasd:ResourceSubType>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>Ethernet 1</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.powerOffType" vmw:value="soft"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.resetType" vmw:value="soft"/>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        family = HARDWARE_FAMILY,
        cpus = CPUS,
        memory = MEMORY_MIB,
    );
    Ok(x)
}
