// Creates SCRAM users and ACLs through Kafka's Admin API (the broker's own kafka-clients jar).
//
// Run as a single-file program: java -cp '<kafka libs>/*' KafkaSecurity.java <client.properties>
// and give it lines on standard input:
//   user NAME PASSWORD                            upsert a SCRAM-SHA-512 credential
//   acl  PRINCIPAL TYPE PATTERN NAME OPERATION    ALLOW OPERATION on TYPE (TOPIC, GROUP) NAME,
//                                                 PATTERN LITERAL or PREFIXED, from any host
//   list                                          print every SCRAM user and ACL in those forms
//                                                 (users without their passwords)
// All are idempotent. The client properties authenticate as a super user.

import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaSecurity {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            config.load(in);
        }
        List<UserScramCredentialAlteration> users = new ArrayList<>();
        List<AclBinding> acls = new ArrayList<>();
        boolean list = false;
        BufferedReader lines = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = lines.readLine(); line != null; line = lines.readLine()) {
            String[] f = line.trim().split("\\s+");
            if (f.length == 3 && f[0].equals("user")) {
                users.add(new UserScramCredentialUpsertion(
                    f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), f[2]));
            } else if (f.length == 6 && f[0].equals("acl")) {
                acls.add(new AclBinding(
                    new ResourcePattern(ResourceType.fromString(f[2]), f[4], PatternType.fromString(f[3])),
                    new AccessControlEntry(f[1], "*", AclOperation.fromString(f[5]), AclPermissionType.ALLOW)));
            } else if (f.length == 1 && f[0].equals("list")) {
                list = true;
            } else if (!line.isBlank()) {
                throw new IllegalArgumentException("cannot read: " + line);
            }
        }
        try (Admin admin = Admin.create(config)) {
            if (!users.isEmpty()) {
                admin.alterUserScramCredentials(users).all().get();
            }
            if (!acls.isEmpty()) {
                admin.createAcls(acls).all().get();
            }
            if (list) {
                for (String user : admin.describeUserScramCredentials().all().get().keySet()) {
                    System.out.println("user " + user);
                }
                for (AclBinding acl : admin.describeAcls(AclBindingFilter.ANY).values().get()) {
                    System.out.println(String.join(" ", "acl", acl.entry().principal(),
                        acl.pattern().resourceType().name(), acl.pattern().patternType().name(),
                        acl.pattern().name(), acl.entry().operation().name(),
                        acl.entry().permissionType().name()));
                }
                return;
            }
        }
        System.out.println(users.size() + " user(s), " + acls.size() + " ACL(s)");
    }
}
