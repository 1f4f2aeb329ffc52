package io.keyflow.camunda;

import org.camunda.bpm.engine.rest.security.auth.ProcessEngineAuthenticationFilter;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.annotation.Bean;

/**
 * Camunda 7's engine and REST API, nothing else: the server keyflow's Camunda 7 connectors talk
 * to in the tests. Port, database file and admin user come from the command line
 * (--server.port, --spring.datasource.url, --camunda.bpm.admin-user.id/password).
 */
@SpringBootApplication
public class EngineApplication {
    public static void main(String[] args) {
        SpringApplication.run(EngineApplication.class, args);
    }

    /** HTTP basic authentication on every REST call, checked against the engine's users. */
    @Bean
    public FilterRegistrationBean<ProcessEngineAuthenticationFilter> basicAuthentication() {
        FilterRegistrationBean<ProcessEngineAuthenticationFilter> f = new FilterRegistrationBean<>(new ProcessEngineAuthenticationFilter());
        f.addUrlPatterns("/engine-rest/*");
        f.addInitParameter("authentication-provider", "org.camunda.bpm.engine.rest.security.auth.impl.HttpBasicAuthenticationProvider");
        return f;
    }
}
